"""Fault tests: crash and resume, full disks, bad input, divergence, crafted files (issue 8)."""
