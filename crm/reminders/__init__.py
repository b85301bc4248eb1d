"""Reminders (跟进提醒): generation from every source, the dispatch to in-app / email / DingTalk / WeCom /
webhook channels exactly once, snooze and done, per-user notification settings and the ICS feed."""
