# Root conftest: lets the test suite run from a source checkout.
