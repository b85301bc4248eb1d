"""The recycle engine (回收规则): rules per pool, due times, warnings and escalation, extensions (延期申请),
protection and nurture (长期培育), the holiday calendar, the set-based sweep and its run log.

- ``engine``: the one due-time definition (SQL expressions + cutoffs, and the single-customer view)
- ``sweep``: ``sweep(session, now)`` — recycles, warns and escalates for the whole database
- ``services``: rule editing with preview, nurture, protection, extension requests
- ``calendar``: the holiday calendar and the ``recycle`` settings section
"""
