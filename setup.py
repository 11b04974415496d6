"""Shim for Beam's --setup_file (Dataflow installs this package on workers with it); metadata lives in pyproject.toml."""
from setuptools import setup

setup()
