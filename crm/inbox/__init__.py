"""The workbench (工作台): the rep's home screen of due, overdue, stalled and about-to-be-recycled work."""
