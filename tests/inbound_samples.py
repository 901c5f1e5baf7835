"""Messages heard back, written from the RFCs and from what MTAs are documented to send.

Each takes the envelope sender our message went out from (``verp``, a bounces+TOKEN
address) and the reader's address (``to``); their shapes are those of the real thing.
"""


def postfix_dsn(verp: str, to: str, status="5.1.1", action="failed", diagnostic=None) -> bytes:
    """RFC 3464 as Postfix's bounce daemon writes it."""
    diagnostic = (
        diagnostic or f"smtp; 550 {status} <{to}>: Recipient address rejected: User unknown"
    )
    return f"""Return-Path: <>
Delivered-To: {verp}
From: MAILER-DAEMON@mx.newsroom.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="8A3F21C0E2.1732512345/mx.newsroom.org"
Message-Id: <20261125071234.8A3F21C0E2@mx.newsroom.org>

This is a MIME-encapsulated message.

--8A3F21C0E2.1732512345/mx.newsroom.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.newsroom.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--8A3F21C0E2.1732512345/mx.newsroom.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.newsroom.org
X-Postfix-Queue-ID: 8A3F21C0E2
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Wed, 25 Nov 2026 07:12:33 +0000 (UTC)

Final-Recipient: rfc822; {to}
Original-Recipient: rfc822;{to}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.greenfield-mail.net
Diagnostic-Code: {diagnostic}

--8A3F21C0E2.1732512345/mx.newsroom.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{verp}>
From: Explaining Ukraine <letters@newsroom.org>
To: {to}
Subject: Explaining Ukraine, issue 1

--8A3F21C0E2.1732512345/mx.newsroom.org--
""".replace("\n", "\r\n").encode()


def exchange_ndr(verp: str, to: str) -> bytes:
    """Exchange Online's non-delivery report: a DSN with its own diagnostic."""
    return f"""From: Microsoft Outlook <postmaster@contoso.onmicrosoft.com>
To: {verp}
Subject: Undeliverable: Explaining Ukraine, issue 1
Content-Type: multipart/report; report-type=delivery-status; boundary="b1_ndr"
MIME-Version: 1.0
X-MS-Exchange-Message-Is-Ndr:

--b1_ndr
Content-Type: text/html; charset=us-ascii

<p>Your message to {to} couldn't be delivered.</p>

--b1_ndr
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.com
Received-From-MTA: dns;mail.newsroom.org

Final-Recipient: rfc822;{to}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP
 address lookup

--b1_ndr
Content-Type: message/rfc822

From: letters@newsroom.org
To: {to}
Subject: Explaining Ukraine, issue 1

--b1_ndr--
""".encode()


def gmail_dsn(verp: str, to: str) -> bytes:
    """Gmail's "Delivery Status Notification (Failure)": a DSN, a human part first."""
    return f"""Delivered-To: {verp}
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {verp}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000abc"; report-type=delivery-status

--000000000000abc
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to {to} because the address couldn't be found.

--000000000000abc
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Wed, 25 Nov 2026 00:12:33 -0800 (PST)

Final-Recipient: rfc822; {to}
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.0.1, the server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
Last-Attempt-Date: Wed, 25 Nov 2026 00:12:34 -0800 (PST)

--000000000000abc--
""".encode()


def exim_bounce(verp: str, to: str) -> bytes:
    """Exim's plain-text bounce (no DSN), as its documentation shows."""
    return f"""Return-path: <>
Envelope-to: {verp}
From: Mail Delivery System <Mailer-Daemon@mail.greenfield-mail.net>
To: {verp}
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied
X-Failed-Recipients: {to}

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {to}
    host mail.greenfield-mail.net [127.0.0.1]
    SMTP error from remote mail server after RCPT TO:<{to}>:
    550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table

------ This is a copy of the message, including all the headers. ------

Return-path: <{verp}>
From: letters@newsroom.org
To: {to}
Subject: Explaining Ukraine, issue 1
""".encode()


def yahoo_bounce(verp: str, to: str) -> bytes:
    """Yahoo's own plain-text failure notice."""
    return f"""From: MAILER-DAEMON@yahoo.com
To: {verp}
Subject: Failure Notice

Sorry, we were unable to deliver your message to the following address.

<{to}>:
554: delivery error: dd This user doesn't have a yahoo.com account ({to}) [0] - mta1.mail.yahoo.com

--- Below this line is a copy of the message.

From: letters@newsroom.org
To: {to}
""".encode()


def arf_complaint(to: str, verp: str, mail_from: str = "letters@newsroom.org") -> bytes:
    """An RFC 5965 feedback report, as a mailbox provider's feedback loop sends it."""
    return f"""From: <staff@fbl.greenfield-mail.net>
Date: Wed, 25 Nov 2026 08:00:00 +0000
Subject: FW: Explaining Ukraine, issue 1
To: <abuse@newsroom.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 127.0.0.1.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <{verp}>
Original-Rcpt-To: <{to}>
Arrival-Date: Wed, 25 Nov 2026 07:59:00 +0000
Source-IP: 127.0.0.1

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822

Return-Path: <{verp}>
From: Explaining Ukraine <{mail_from}>
To: {to}
Subject: Explaining Ukraine, issue 1

--part1_13d.2e68ed54_boundary--
""".encode()


def vacation(verp: str, to: str) -> bytes:
    """An out-of-office note sent back to the envelope sender (RFC 3834 marks it)."""
    return f"""From: Olena <{to}>
To: {verp}
Subject: Out of Office: Explaining Ukraine, issue 1
Auto-Submitted: auto-replied
X-Autoreply: yes

I am away until Monday and will read your message when I return.
""".encode()


def mailto_unsubscribe(to: str, mail_from: str, token: str) -> bytes:
    """What Apple Mail sends for a List-Unsubscribe mailto: the subject carries the token."""
    return f"""From: {to}
To: {mail_from}
Subject: unsubscribe {token}

This message was automatically generated by Mail to unsubscribe from a mailing list.
""".encode()


def reader_reply(to: str, mail_from: str) -> bytes:
    """A reader writing back."""
    return f"""From: Olena <{to}>
To: {mail_from}
Subject: Re: Explaining Ukraine, issue 1
In-Reply-To: <issue-1@newsroom.org>

Thank you for the piece on Kharkiv.
""".encode()
