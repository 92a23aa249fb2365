from shoplens.cli.main import entry

entry()
