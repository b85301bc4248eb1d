"""审批: one page (and one badge in the managers' navigation) for what waits on a manager's decision."""
