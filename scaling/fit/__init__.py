"""Fit E = β·C^α on the frontier of error against compute, with bootstrap intervals."""

from scaling.fit.frontier import METHODS
from scaling.fit.powerlaw import FrontierPoint, Law, fit_law

__all__ = ["METHODS", "FrontierPoint", "Law", "fit_law"]
