"""The pipeline (阶段即动作): stage changes with their requirements, 一转三 lead conversion, opportunities
(商机), the per-rep kanban and the stage settings."""
