from pg import postgres_url_fixture

postgres_url = postgres_url_fixture()
