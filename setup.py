"""Builds the C++ extension ``supernet._C`` from ``csrc/`` (and the CUDA one where CUDA is usable).

    pip install --no-build-isolation -e .     # torch must already be installed (pinned in pyproject.toml)

``ONESHOT_FORCE_CUDA=1`` builds the CUDA sources (``csrc/cuda/*.cu``) even without a visible GPU;
``ONESHOT_NO_EXTENSION=1`` installs the pure-Python package only. ``MAX_JOBS`` limits parallel compiles.
"""
import glob
import os

from setuptools import setup


def extensions():
    if os.environ.get("ONESHOT_NO_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    use_cuda = bool(cuda_sources) and CUDA_HOME is not None and (
        torch.cuda.is_available() or os.environ.get("ONESHOT_FORCE_CUDA") == "1")
    # py_limited_api=True: torch adds -DPy_LIMITED_API itself, and the one library (_C.abi3.so) serves
    # every CPython >= 3.10; defining it here too only earns a "redefined" warning.
    flags = {"cxx": ["-O3", "-fopenmp"], "nvcc": ["-O3"]}  # no -std: torch picks the one its headers need
    if use_cuda:
        # torch's CUDA headers include cusparse.h, cublas_v2.h, ...; a pip CUDA build of torch brings them in
        # site-packages/nvidia/cu<N>/include, and CUDA_HOME (an nvcc-only toolkit, say) may lack them. -isystem
        # searches them after every -I, so a toolkit's own headers still win.
        site = os.path.dirname(os.path.dirname(torch.__file__))
        for inc in sorted(glob.glob(os.path.join(site, "nvidia", "cu[0-9]*", "include"))):
            flags["cxx"] += ["-isystem", inc]
            flags["nvcc"] += ["-isystem", inc]
        ext = CUDAExtension("supernet._C", sources + cuda_sources, extra_compile_args=flags,
                            extra_link_args=["-fopenmp"], py_limited_api=True)
    else:
        ext = CppExtension("supernet._C", sources, extra_compile_args={"cxx": flags["cxx"]},
                           extra_link_args=["-fopenmp"], py_limited_api=True)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
