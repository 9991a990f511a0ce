"""The completion rule's scheduler tick and the job runner (`runner.JobRunner`).

Nothing is imported here: `dicomnode doctor` uses one module of the package, not the runner's
enhancement, delivery and commitment machinery (a second of imports).
"""
