"""What real mail systems write for each reason (learned from sisimai's public reason
patterns and its corpus; the expressions are ours), and the order they are tried in.

Every pattern is a set of plain phrases or anchored, bounded expressions: a short run
between two fixed words ({0,80}), so none can backtrack far.
"""

import re

from .taxonomy import Reason


def _phrases(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(p) for p in phrases))


# Each reason's phrases, over lower-cased text. A few are expressions: each is a short
# run between two fixed words, bounded ({0,80}), so none can backtrack far.
PHRASES: dict[Reason, re.Pattern[str]] = {
    Reason.MAILBOXFULL: re.compile(
        r"mailbox (?:is )?full|full mailbox|mailbox (?:has )?exceeded|over (?:disk )?quota|"
        r"quota exceeded|exceeded (?:its |their |the )?(?:storage|quota|disk)|"
        r"(?:mail|disk|storage) quota|quota (?:violation|usage)|insufficient (?:disk )?space|"
        r"not enough (?:disk |storage )?space|no space left|mailfolder is full|"
        r"mailbox size limit|exceeding (?:its |their )?(?:mailbox )?quota|"
        r"would exceed maximum allowed storage|space has been used up|too much mail data|"
        r"too many messages on the server|boite du destinataire pleine|mailbox is over|"
        r"user's space|recipient reached disk quota|mailbox has too many|"
        r"mailbox exceeds allowed size|the user's mailbox is full|inbox is full|"
        r"over the allowed quota|exceeds? (?:the )?mailbox"
    ),
    Reason.MESGTOOBIG: re.compile(
        r"message (?:size|length) exceeds|message (?:file )?too (?:big|large)|"
        r"exceeded (?:the )?maximum (?:inbound|incoming) message size|max(?:imum)? message size|"
        r"message size (?:exceeds|limit)|line limit exceeded|taille limite du message|"
        r"size limit|message is too big"
    ),
    Reason.EXCEEDLIMIT: _phrases(
        "message too large for this ",
        "exceeds size limit",
        "message exceeds the maximum size",
        "receiving limit",
    ),
    Reason.SUSPEND: re.compile(
        r"(?:is|been|currently) (?:temporarily )?suspended|user suspended|mailbox (?:is )?disabled|"
        r"account (?:is |has been )?(?:disabled|locked|deactivated|inactive|frozen)|"
        r"inactive account|mailbox is frozen|mailbox currently suspended|temporary locked|"
        r"archived recipient|boite du destinataire archivee|user is terminated|"
        r"deactivated mailbox|temporarily inactive|recipient suspend|user or domain is disabled|"
        r"invalid/inactive user|this mailbox is disabled|disabled or discontinued|"
        r"email account that you tried to reach is disabled|account is locked|"
        r"due to extended inactivity|mailbox (?:is )?inactive|disabled recipient"
    ),
    Reason.HASMOVED: _phrases(
        "has been replaced by ", "address has moved", "mailbox has moved", "no longer at this"
    ),
    Reason.NORELAYING: re.compile(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|no relaying|"
        r"unable to relay|not (?:allowed|permitted) to relay|as a relay|"
        r"not configured to relay|insecure mail relay|relaying mail to|not an open relay|"
        r"we don't handle mail for|specified domain is not allowed|not local host|"
        r"that domain isn't in my list of allowed rcpthosts|not a gateway"
    ),
    Reason.AUTHFAILURE: re.compile(
        r"\bspf\b.{0,40}\b(?:fail|violation|error|check)|sender policy framework|"
        r"\bdmarc\b.{0,40}(?:policy|fail|reject)|\bdkim\b.{0,40}(?:fail|invalid|not pass)|"
        r"not (?:allowed|authorized) to send (?:mail )?(?:from|on behalf)|"
        r"unauthenticated (?:email|mail|message)|authentication checks failed|"
        r"authentication (?:checks? )?fail.{0,20}(?:spf|dkim|dmarc)|please inspect your spf|"
        r"bad spf records|//spf\.pobox\.com"
    ),
    Reason.REQUIREPTR: re.compile(
        r"reverse dns|\bptr\b|\brdns\b|cannot find your hostname|cannot resolve your address|"
        r"ip name lookup failed|unresolvable relay host|reverse lookup|"
        r"forward dns entry does not point|mismatches client ip|generic dns|"
        r"not have a ptr|hostname lookup failed"
    ),
    Reason.NOTCOMPLIANTRFC: re.compile(
        r"not rfc ?5322 compliant|rfcmessagenoncompliant|multiple .{0,30}headers?|"
        r"duplicate header|not rfc compliant"
    ),
    Reason.BADREPUTATION: _phrases(
        "reputation",
        "unexpected volume or user complaints",
    ),
    Reason.CONTENTERROR: _phrases(
        "media error",
        "header size exceeds",
        "improper use of 8-bit data",
        "mime complexity",
        "invalid mime headers",
        "improperly-formatted binary content",
        "unnecessary base64 encoding",
        "too many received: headers",
        "message header size",
    ),
    Reason.VIRUSDETECTED: re.compile(
        r"virus|malware|infected|potentially executable|executable (?:files|attachment)"
    ),
    Reason.SPAMDETECTED: re.compile(
        r"\bspam(?!haus|cop)|unsolicited|\bbulk (?:e-?mail|mail|advertising)|content filter|"
        r"mail content denied|message content rejected|rejecting (?:banned|mail) content|"
        r"spam-like|recurrent pattern detection|uribl|spamassassin|spamprofiler|"
        r"antispam|anti-spam|junk mail|rejected due to classification|"
        r"unacceptable content|probable spam|message filtered|mail score \(|greylisted"
    ),
    Reason.POLICYVIOLATION: re.compile(
        r"policy (?:violation|reasons)|denied by policy|organi[sz]ation(?:al)? (?:policy|settings)|"
        r"local policy|security polic|illegal attachment|members-only list|closed mailing list|"
        r"not accepting mail with|not subscribed to this group|mass mailer|"
        r"header (?:error|are not accepted)|message given low priority|protocol violation|"
        r"do not accept messages containing|content presents a potential|"
        r"captcha|rejected by organization policy|messages with multiple addresses"
    ),
    Reason.SPEEDING: _phrases(
        "rate limited",
        "please try again slower",
        "at a rate that prevents",
        "rate limit exceeded",
        "sending rate",
        "too fast",
        "sent to too many recipients",
    ),
    Reason.TOOMANYCONN: re.compile(
        r"too many (?:connections|concurrent|smtp sessions|errors from your ip|recipients)|"
        r"connection (?:rate )?limit|max emails per hour|throttling failure|trop de connexions|"
        r"maximum connection limit|numerous attempts to deliver"
    ),
    Reason.BLOCKED: re.compile(
        r"\bblock(?:ed|list)\b|black ?list|\bdnsbl\b|\brbl\b|spamhaus|spamcop|barracudacentral|"
        r"abuseat\.org|sorbs|bad sender ip|banned sending ip|your ip|from ip|sending ip|"
        r"client host .{0,80}rejected|helo command rejected|dynamic ip|dynamic/zombied|"
        r"open proxy|not allowed to connect|go away|refused to talk to me|"
        r"not accepting connections|connection refused|service refused|"
        r"not currently accepting mail from|has been rejected|access denied\. |"
        r"listed (?:in|at|on|as)|bad ip|ip profile|use the smtp server of your isp|"
        r"confirm this mail server|requires confirmation|looks suspiciously like|"
        r"host network not allowed|no access from mail server|"
        r"error from remote mail server after initial connection"
    ),
    Reason.REJECTED: re.compile(
        r"sender (?:address |email address |domain |ip address )?"
        r"(?:rejected|refused|is (?:in my black list|spammer)|was rejected|verify failed|"
        r"not pre-approved|blacklisted|is empty)|invalid sender|bogus mail from|"
        r"mail from (?:not owned|rejected|refused)|envelope blocked|administrative prohibition|"
        r"domain of sender address|unroutable sender|batv|null sender|empty envelope sender|"
        r"third-party dsns|returned mail not accepted|not allowed to post to this mailing list|"
        r"not (?:on|in) the recipient's list of senders|sender is not|senderfilterconfig|"
        r"your email address has been blacklisted|emetteur invalide|"
        r"fully qualified email address required|bouncedeny|not a registered gateway|"
        r"can't determine purported responsible address|does not accept mail from|"
        r"rule imposed mailbox access|address is not verified|access denied \(in reply to mail"
    ),
    Reason.FILTERED: _phrases(
        # au (KDDI) answers so for mail its reader's filter refuses: no address named.
        "550 : user unknown",
        "550: : user unknown",
        "only accepting mail from specific",
        "is not accepting any mail",
        "message rejected due to user rules",
        "refused due to recipient preferences",
        "resolver.rst.notauthorized",
        "this account is protected by",
        "user refuses to receive",
        "user reject",
        "refuse to receive mail",
        "blocked by the recipient",
        "has restricted sms e-mail",
        "bounced address",
        "not found recipient account",
    ),
    Reason.HOSTUNKNOWN: re.compile(
        r"host (?:or domain name )?(?:not found|unknown)(?!, try again)|unknown (?:host|domain)|"
        r"no such domain|domain (?:does not|must) exist|domain is not reachable|"
        r"unrout(?:e)?able (?:address|mail domain)|name or service not known|"
        r"mail domain mentioned in email address is unknown|recipient domain must exist|"
        r"the account or domain may not exist|domain not found|host unreachable|"
        r"host \S{1,100} not found|553 \S{1,100} does not exist"
    ),
    Reason.NOTACCEPT: _phrases(
        "does not accept mail",
        "nullmx",
        "null mx",
        "mail receiving disabled",
        "no mx record found",
        "no route for current request",
        "smtp protocol returned a permanent error",
        "indicated no smtp service",
    ),
    Reason.USERUNKNOWN: re.compile(
        r"user (?:unknown|not found|not known|not exist|does not exist|not active)|"
        r"unknown (?:user|recipient|mailbox|local ?part|e-?mail address|address)|"
        r"(?:no such|invalid|bad|unknown|nonexistent|non-existent) "
        r"(?:user|recipient|mailbox|address|person|account)|"
        r"(?:recipient|address|mailbox|user|account|addressee) .{0,80}"
        r"(?:does not exist|doesn't exist|not exist|not found|unknown|was not found)|"
        r"(?:mailbox|recipient|address) (?:is )?(?:invalid|unavailable|not present|inactive)|"
        r"not a (?:valid|known) (?:recipient|user|mailbox)|is not a known user|"
        r"recipient rejected|no mailbox|no account by that name|"
        r"there is no one at this address|no longer (?:accepts mail|valid|in use)|"
        r"badrcptto|badrecipientto|validrcptto|address (?:does not exist|unknown|invalid|"
        r"rejected\.)|destination addresses were unknown|destination server rejected recipients|"
        r"resolver\.adr\.recipient ?not ?found|recipnotfound|not listed in domino directory|"
        r"utilisateur inconnu|no existe|nessun utente|wrong or no longer valid|"
        r"is not an active address|not a local address|no mail ?box available|"
        r"mailbox unavailable|user doesn't have a|not our customer|"
        r"requested action not taken: mailbox unavailable|can't accept user|"
        r"vdeliver: invalid|home directory|dd this user doesn't|does not have an account|"
        r"not listed in (?:public name & address book|domino directory)|"
        r"recipient address rejected: access denied|invalid final delivery userid|"
        r"no valid recipients"
    ),
    Reason.SYSTEMERROR: re.compile(
        r"loop (?:was found|detected|back)|loops back to myself|forwarding loop|"
        r"local (?:configuration error|error in processing|problem)|configuration error|"
        r"config error|queue file write error|misconfigured|service (?:currently )?unavailable|"
        r"internal (?:server )?error|interrupted system call|timeout waiting for input|"
        r"can't create user output file|error while being processed|"
        r"temporary (?:local )?(?:failure|problem)|"
        r"system error|unable to connect .{0,40}daemon|transaction failed |could not load drd"
    ),
    Reason.NETWORKERROR: re.compile(
        r"host is unreachable|no route to host|name server|dns records for the destination|"
        r"host not found, try again|unable to resolve route|hop count exceeded|too many hops|"
        r"message (?:probably in a routing )?loop|could not connect and send|"
        r"host name lookup failure|dns (?:lookup )?(?:failure|error)"
    ),
    Reason.SYSTEMFULL: _phrases("mail system full", "system congestion"),
    Reason.EXPIRED: re.compile(
        r"(?:delivery|message) (?:time )?expired|expired after|timed out|"
        r"(?:queue|queued) (?:too long|period)|in the queue too long|giving up on|"
        r"have been failing for a long time|has been delayed|"
        r"not (?:been )?(?:collected|delivered) (?:after|for more than|within)|"
        r"could not be delivered for|retry time not reached|unable to deliver .{0,40}after|"
        r"delivery attempts will continue|server did not respond|could not find a gateway|"
        r"failed to deliver to domain|retry timeout exceeded|was not reachable within"
    ),
    Reason.FAILEDSTARTTLS: _phrases(
        "starttls is required", "tls required but not supported", "must issue a starttls"
    ),
    Reason.SECURITYERROR: re.compile(
        r"authentication (?:credentials invalid|fail|required|turned on)|"
        r"authentification (?:invalide|requise)|unauthenticated senders|verification failure|"
        r"you don't authenticate|not authorized to (?:send|perform)|is a dead domain|"
        r"account not subscribed to ses|executable files are not allowed"
    ),
    Reason.MAILERERROR: re.compile(
        r"mailer error|procmail|maildrop|command (?:failed|died|output)|pipe to \||"
        r"x-unix;|\|\| exit |unknown mailer error"
    ),
    Reason.SYNTAXERROR: re.compile(
        r"syntax error|command unrecognized|command not (?:recognized|implemented)|"
        r"unrecognized command|bad sequence of commands"
    ),
}

# The order phrases are tried in: the specific before the general, and what is not
# the address before "user unknown", whose words turn up inside other refusals.
FIRST = (
    Reason.MAILBOXFULL,
    Reason.MESGTOOBIG,
    Reason.SUSPEND,
    Reason.HASMOVED,
    Reason.NORELAYING,
    Reason.AUTHFAILURE,
    Reason.REQUIREPTR,
    Reason.NOTCOMPLIANTRFC,
    Reason.BADREPUTATION,
    Reason.CONTENTERROR,
    Reason.VIRUSDETECTED,
    Reason.SPAMDETECTED,
    Reason.POLICYVIOLATION,
    Reason.SPEEDING,
    Reason.TOOMANYCONN,
    Reason.REJECTED,
    Reason.FILTERED,
    Reason.NOTACCEPT,
    Reason.HOSTUNKNOWN,
    Reason.USERUNKNOWN,
    Reason.BLOCKED,
    Reason.EXCEEDLIMIT,
    Reason.FAILEDSTARTTLS,
    Reason.SECURITYERROR,
    Reason.NETWORKERROR,
    Reason.SYSTEMFULL,
    Reason.SYSTEMERROR,
    Reason.EXPIRED,
    Reason.MAILERERROR,
    Reason.SYNTAXERROR,
)
