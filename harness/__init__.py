"""Throwaway servers that the tests and the benchmarks both start (never imported by the gateway)."""
