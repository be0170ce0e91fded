"""Small helpers every layer may use: retry delays, child processes. No other lbsync import."""
