"""Running a suite: the plan of runs, one run (`runner`), the store of results, and the
coordinator that hands runs to local worker processes (`local`) or Ray tasks (`ray_tasks`)."""
