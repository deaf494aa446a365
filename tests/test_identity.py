"""identity: which Django changes publish which message, after commit only, with no secret in it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import transaction

from notifications import identity
from notifications.events import IDENTITY_TYPE, VERSION
from notifications.models import Viewer
from notifications.services import notify

pytestmark = pytest.mark.django_db(transaction=True)


def identity_messages(published: list[dict]) -> list[dict]:
    return [m for m in published if m["type"] == IDENTITY_TYPE]


def test_joining_a_group_publishes_the_new_groups_and_the_newest_id_before_it(alice, group, published):
    ops = Group.objects.create(name="ops")
    newest = notify("before the change").id
    alice.groups.add(ops)
    (message,) = identity_messages(published)
    assert message == {"type": IDENTITY_TYPE, "v": VERSION, "groups": [[alice.pk, sorted([group.pk, ops.pk])]],
                       "after": newest}


def test_leaving_through_the_groups_side_names_every_member(alice, bob, group, published):
    group.user_set.add(bob)
    published.clear()
    group.user_set.remove(alice, bob)
    (message,) = identity_messages(published)
    assert message["groups"] == [[alice.pk, []], [bob.pk, []]]


def test_clearing_a_group_names_the_members_it_had(alice, bob, group, published):
    group.user_set.add(bob)
    published.clear()
    group.user_set.clear()
    (message,) = identity_messages(published)
    assert sorted(message["groups"]) == sorted([[alice.pk, []], [bob.pk, []]])


def test_nothing_is_published_when_the_change_rolls_back(alice, published):
    ops = Group.objects.create(name="ops")
    with pytest.raises(RuntimeError), transaction.atomic():
        alice.groups.add(ops)
        raise RuntimeError
    assert identity_messages(published) == []


def test_password_change_publishes_a_digest_that_old_viewers_do_not_match(alice, published):
    before = Viewer.of(alice)
    alice.set_password("another-pw-456")
    alice.save()
    (message,) = identity_messages(published)
    assert message["user_id"] == alice.pk
    assert message["auth"] != before.auth
    assert message["auth"] == Viewer.of(alice).auth
    assert alice.password not in str(message) and alice.get_session_auth_hash() not in str(message)


def test_made_inactive_ends_all_and_last_login_updates_publish_nothing(alice, published):
    from django.utils import timezone

    alice.last_login = timezone.now()
    alice.save(update_fields=["last_login"])
    assert identity_messages(published) == []
    alice.is_active = False
    alice.save()
    assert identity_messages(published) == [{"type": IDENTITY_TYPE, "v": VERSION, "user_id": alice.pk, "end_all": True}]


def test_deleting_a_user_ends_all(alice, published):
    pk = alice.pk
    alice.delete()
    assert {"type": IDENTITY_TYPE, "v": VERSION, "user_id": pk, "end_all": True} in identity_messages(published)


def test_logout_publishes_a_digest_of_that_session_only(client, alice, published):
    client.force_login(alice)
    key = client.session.session_key
    client.post("/accounts/logout/")
    (message,) = identity_messages(published)
    assert message == {"type": IDENTITY_TYPE, "v": VERSION, "user_id": alice.pk,
                       "end_session": identity.digest(key)}
    assert key not in str(message)
    assert Viewer.of(alice, session_key=key).session == message["end_session"]
