"""Background tasks (后台任务): long operations run as rq jobs with a progress row the page polls."""
