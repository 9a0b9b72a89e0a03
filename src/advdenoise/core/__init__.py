"""What every stage shares: typed params (`params`, validated once from params.yaml), the stage
command line (`cli`), errors with exit codes (`errors`), atomic file writes (`io`), run-time set-up
(`runtime`: threads, device, determinism) and named random streams (`seeding`).
"""
