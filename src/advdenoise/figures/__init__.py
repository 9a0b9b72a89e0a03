"""Matplotlib figures, one module per stage; all use the non-interactive Agg backend."""

import matplotlib

matplotlib.use("Agg")
