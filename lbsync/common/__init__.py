"""Small helpers every layer may use: retry delays, child processes, HTTP faults in words. No
other lbsync import."""
