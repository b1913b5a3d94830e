"""Budget search: a search space (`space`), an exact budget solver (`solve`), objectives
(`objectives`) and the Optuna study around them (`study`), kept apart in Optuna's style.
`records` holds the names of what a study stores, for readers such as `featherface-tune report`."""
