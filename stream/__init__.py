"""Live KPI engine for B2B lead generation."""

__version__ = "0.1.0"
