"""placeholder"""
TITLE = "x"
