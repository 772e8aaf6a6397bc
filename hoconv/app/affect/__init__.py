"""Affect estimation: the paper's metrics (RMSE, SAGR, PCC, CCC) and loss."""
