import pytest

from app import create_app, db
from app.models import Client, User


@pytest.fixture
def app():
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})
    with app.app_context():
        db.create_all()
        db.session.add_all([Client(id=1, name="Acme"), Client(id=2, name="Globex")])
        db.session.add_all([User(id=1, email="ann@acme.test", client_id=1),
                            User(id=2, email="bob@globex.test", client_id=2)])
        db.session.commit()
        yield app
        db.session.remove()
        db.drop_all()


@pytest.fixture
def client(app):
    return app.test_client()
