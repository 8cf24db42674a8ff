"""Analyses across finished runs (``python -m fer_lottery.analysis``): mask overlap
against chance."""
