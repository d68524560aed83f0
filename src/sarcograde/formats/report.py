"""What `report` writes: one self-contained HTML page, by default `report.html` in the folder it
reports on (EVAL/ or a study's DIR/), with its run record `report.run.json` beside it."""

REPORT = "report.html"
