"""
Benchmarks: run each as python -m bench.<part>.<script> from the repository
root (the make bench-* targets do).
"""
