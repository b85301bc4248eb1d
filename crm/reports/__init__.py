"""Dashboards (看板) for managers and admins: funnel, per-rep, revisit heatmaps, pool KPIs, the weekly pool
review and its digest. Numbers come from aggregate SQL in ``services``; ``rollup`` keeps daily tables."""
