from fleethub.cli.main import app

app(prog_name="fleethub")
