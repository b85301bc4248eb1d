"""Child of ``split_scan`` (run as a script, imports nothing of the app): reads one read-only SQL statement and
its parameters as JSON on stdin, runs it on the SQLite database named by ``argv[1]``, prints the rows as JSON."""

import json
import sqlite3
import sys

connection = sqlite3.connect(sys.argv[1])
connection.execute("PRAGMA query_only = ON")
connection.execute("PRAGMA busy_timeout = 30000")
job = json.load(sys.stdin)
json.dump(connection.execute(job["sql"], job["params"]).fetchall(), sys.stdout)
