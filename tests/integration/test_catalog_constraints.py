"""The database itself refuses rows that break the data model, whatever the caller did."""

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from llmlb.store import db
from llmlb.store.models import Message, Model, Session


@pytest.fixture
def engine(tmp_path):
    return db.open_node_catalog(tmp_path / "c.db")


def _model(**kw):
    base = dict(name="m", path="/x", format="GGUF", size_bytes=10, source="Local")
    return Model(**{**base, **kw})


@pytest.mark.parametrize("bad", [{"size_bytes": 0}, {"format": "onnx"}, {"source": "ftp"}])
def test_check_constraints(engine, bad):
    with db.session(engine) as s:
        s.add(_model(**bad))
        with pytest.raises(IntegrityError):
            s.commit()


def test_unique_name_and_alias(engine):
    with db.session(engine) as s:
        s.add(_model(name="a", alias="x"))
        s.commit()
        s.add(_model(name="a", alias="y"))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        s.add(_model(name="b", alias="x"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_messages_need_a_session_and_go_with_it(engine):
    with db.session(engine) as s:
        s.add(Message(session_id="nope", role="User", content="hi"))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        chat = Session(model_name="m")
        s.add(chat)
        s.commit()
        s.add(Message(session_id=chat.id, role="User", content="hi"))
        s.commit()
        s.delete(chat)
        s.commit()
        assert s.exec(select(Message)).all() == []
