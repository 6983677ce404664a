"""Busted: see, judge and stop the LLM and AI-agent conversations leaving a Linux host."""

__version__ = "0.1.0"
