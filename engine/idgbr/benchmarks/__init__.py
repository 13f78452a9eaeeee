"""Benchmarks run by `idgbr benchmark NAME`."""
