"""What a sweep found, and the report that shows it.

``read`` (the only file reader) → ``compute`` (configurations, fronts, hypervolumes,
savings, the advantage over training less: pure) → ``figures`` and ``document`` (render)
→ ``report`` (writes the files). ``results`` holds the typed records they pass along;
``frontier`` the replicate statistics and the dense frontier's (docs/design.md §9). The
dominance and hypervolume maths is ``astray.pareto``, which the sweep's progress line
uses too.
"""
