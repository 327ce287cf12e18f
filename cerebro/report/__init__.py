"""Writers of the autopsy report: arrays and figures on disk, summary.json, report.html, Lightning loggers."""
