// Storage tests: see below
