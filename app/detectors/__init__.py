"""Detectors: pure functions over explicit window state, testable without a broker."""

from app.detectors.finding import Finding
from app.detectors.loop import LoopConfig, LoopWindow, detect_loop

__all__ = ["Finding", "LoopConfig", "LoopWindow", "detect_loop"]
