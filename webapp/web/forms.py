"""The forms: sign-up (with a honeypot), the confirm button and the manage page's actions.
CSRF on each (Flask-WTF)."""

from flask_wtf import FlaskForm
from markupsafe import escape
from wtforms import BooleanField, HiddenField, StringField
from wtforms.validators import ValidationError

from emails.addresses import InvalidAddress, normalize_address

from ..texts import TEXTS


class _TokenWhenShown:
    """A form's CSRF token, signed the first time the form is shown."""

    __slots__ = ("_sign", "_token")

    def __init__(self, sign) -> None:
        self._sign = sign
        self._token: str | None = None

    def __str__(self) -> str:
        if self._token is None:
            self._token = self._sign()
        return self._token

    def __html__(self) -> str:
        return escape(str(self))


class _SignedWhenShown(FlaskForm.Meta.csrf_class):
    # WTForms signs a token for every form it makes, posted ones too. A sign-up post
    # that succeeds is never shown again, and signing its token cost a twentieth of its
    # CPU: the token is signed only if the form is shown (with its error).
    def generate_csrf_token(self, csrf_token_field):
        return _TokenWhenShown(
            lambda: super(_SignedWhenShown, self).generate_csrf_token(csrf_token_field)
        )


class SubscribeForm(FlaskForm):
    """One newsletter's sign-up form. Field names are part of the public contract.

    ``website`` is the honeypot: hidden from people and assistive technology, filled by bots.
    After validation, ``address`` holds the normalized address.
    """

    class Meta:
        csrf_class = _SignedWhenShown

    email = StringField(TEXTS.email_label, filters=[lambda v: v.strip() if v else v])
    newsletter = HiddenField()
    source = HiddenField()
    website = StringField(TEXTS.honeypot_label)
    altcha = HiddenField()  # the solved proof of work, when the robot check is on

    address = None

    def validate_email(self, field: StringField) -> None:
        try:
            self.address = normalize_address(field.data or "")
        except InvalidAddress:
            raise ValidationError(TEXTS.invalid_email) from None

    @property
    def is_bot(self) -> bool:
        """True when the honeypot was filled in."""
        return bool((self.website.data or "").strip())

    def first_error(self) -> str:
        """The one message to show beside the form."""
        if "csrf_token" in self.errors:
            return TEXTS.session_expired
        for errors in self.errors.values():
            return errors[0]
        return ""


class ConfirmForm(FlaskForm):
    """The one-button form that confirms a subscription: only its POST confirms."""


class ManageForm(FlaskForm):
    """One action of the manage page; CSRF-protected like every form."""

    action = HiddenField()
    newsletter = HiddenField()
    language = HiddenField()  # a select on the page: any text arrives, the view checks it
    erase_confirm = BooleanField(TEXTS.manage_erase_confirm)
