"""Benchmarks behind `busted bench ...`: each measures a real component and reports
rates or ratios from one run (never a pass/fail timing)."""
