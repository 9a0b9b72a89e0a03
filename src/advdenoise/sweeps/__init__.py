"""Beyond one run: aggregating seed sweeps (`seeds`) and verifying metrics against the committed
ones (`verify`).
"""
