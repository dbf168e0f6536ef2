"""Kernels of tinyres, three layers with one signature each.

reference.py is pure NumPy and the readable specification; cpu.py is the Numba version;
cuda.py launches the CUDA C sources in cuda/*.cu through CuPy. tinyres.backend picks one
of them from an array's device.
"""
