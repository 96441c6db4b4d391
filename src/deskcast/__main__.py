from deskcast.cli import run

run()
