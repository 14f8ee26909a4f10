"""``agentbox doctor``: what every mode needs from this host, found by a probe (``probe``),
judged by pure checks (``checks``), printed by the verb (``verb``)."""
