"""`autotransfer bench`: the engine against the recipe's fixed strategies and the usual baselines.

``suite`` reads a suite file, ``data`` makes the per-seed train/test folders, ``contenders`` holds
what competes (fit, the fixed strategies, the grid oracle, command lines), ``runner`` runs the
cells resumably, and ``leaderboard`` turns the finished cells into tables and a report.
"""
