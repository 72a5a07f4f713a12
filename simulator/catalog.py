"""Static reference data the synthetic fleet draws from (models, OS builds, apps, people).

Kept apart from fleet.py so the generator reads as logic, not as tables. Everything here is
immutable: tuples of tuples, so generated devices can share the strings safely.
"""
from __future__ import annotations

from typing import NamedTuple

PLATFORMS = ("Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android")
APPLE_PLATFORMS = PLATFORMS[:4]

# Roughly what a mixed business fleet looks like (Iru manages Windows and Android too).
DEFAULT_PLATFORM_MIX = {"Mac": 0.50, "iPhone": 0.18, "iPad": 0.14, "AppleTV": 0.08, "Windows": 0.06,
                        "Android": 0.04}


class Model(NamedTuple):
    model: str  # marketing name, as the list item's `model`
    model_identifier: str  # "" where the platform reports none (Windows, Android)
    capacity_gb: float  # boot volume size
    # Mac only (hardware_overview): "" elsewhere.
    model_name: str = ""
    processor: str = ""
    cores: str = ""
    memory: str = ""


MODELS = {
    "Mac": (
        Model("MacBook Pro (14-inch, 2021)", "MacBookPro18,3", 494.38, "MacBook Pro", "Apple M1 Pro", "8", "16 GB"),
        Model("MacBook Pro (16-inch, 2019)", "MacBookPro16,1", 499.96, "MacBook Pro", "8-Core Intel Core i9", "8",
              "32 GB"),
        Model("MacBook Air (M1, 2020)", "MacBookAir10,1", 245.11, "MacBook Air", "Apple M1", "8", "8 GB"),
        Model("MacBook Air (15-inch, M2, 2023)", "Mac14,15", 494.38, "MacBook Air", "Apple M2", "8", "16 GB"),
        Model("MacBook Pro (14-inch, M3, Nov 2023)", "Mac15,3", 994.66, "MacBook Pro", "Apple M3", "8", "16 GB"),
        Model("iMac (24-inch, M1, 2021)", "iMac21,1", 245.11, "iMac", "Apple M1", "8", "8 GB"),
        Model("Mac mini (2023)", "Mac14,3", 494.38, "Mac mini", "Apple M2", "8", "16 GB"),
        Model("Mac Studio (2022)", "Mac13,1", 994.66, "Mac Studio", "Apple M1 Max", "10", "32 GB"),
    ),
    "iPhone": (
        Model("iPhone 13", "iPhone14,5", 128.0),
        Model("iPhone 14 Pro", "iPhone15,2", 256.0),
        Model("iPhone 15", "iPhone15,4", 128.0),
        Model("iPhone SE (3rd generation)", "iPhone14,6", 64.0),
    ),
    "iPad": (
        Model("iPad (9th generation)", "iPad12,1", 64.0),
        Model("iPad Air (5th generation)", "iPad13,16", 256.0),
        Model("iPad Pro (11-inch) (4th generation)", "iPad14,3", 128.0),
    ),
    "AppleTV": (
        Model("Apple TV 4K (3rd generation)", "AppleTV14,1", 64.0),
        Model("Apple TV 4K (2nd generation)", "AppleTV11,1", 32.0),
    ),
    "Windows": (
        Model("Latitude 7440", "", 512.0),
        Model("ThinkPad X1 Carbon Gen 11", "", 512.0),
        Model("Surface Laptop 5", "", 256.0),
    ),
    "Android": (
        Model("Pixel 8", "", 128.0),
        Model("Galaxy S23", "", 256.0),
    ),
}

class OSVersion(NamedTuple):
    os_version: str
    build: str = ""  # "" off Apple
    supplemental_build_version: str = ""  # a Rapid Security Response (Apple), the installed update (Windows)
    supplemental_os_version_extra: str = ""  # a Rapid Security Response's letter


OS_VERSIONS = {
    "Mac": (
        OSVersion("14.5", "23F79"),
        OSVersion("14.6.1", "23G93"),
        OSVersion("13.6.7", "22G720"),
        OSVersion("13.4.1", "22F82", "22F770820d", "(c)"),  # a Rapid Security Response
        OSVersion("12.7.5", "21H1222"),
    ),
    "iPhone": (
        OSVersion("17.5.1", "21F90"),
        OSVersion("17.6", "21G80"),
        OSVersion("16.7.8", "20H343"),
        OSVersion("16.5.1", "20F75", "20F770750d", "(c)"),
    ),
    "iPad": (
        OSVersion("17.5.1", "21F90"),
        OSVersion("17.6", "21G80"),
        OSVersion("16.7.8", "20H343"),
    ),
    "AppleTV": (
        OSVersion("17.5", "21L569"),
        OSVersion("17.6", "21M71"),
    ),
    # Windows reports the kernel version; its updates show in supplemental_build_version.
    "Windows": (
        OSVersion("10.0.22631", supplemental_build_version="22631.3737"),
        OSVersion("10.0.22631", supplemental_build_version="22631.3880"),
        OSVersion("10.0.19045", supplemental_build_version="19045.4529"),
    ),
    "Android": (
        OSVersion("14", supplemental_build_version="AP2A.240605.024"),
        OSVersion("13", supplemental_build_version="TQ3A.230901.001"),
    ),
}

BLUEPRINT_NAMES = (
    "Default Blueprint",
    "Engineering",
    "Sales & Marketing",
    "Executives",
    "Shared iPads",
    "Conference Room TVs",
)

FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Dan", "Elena", "Farid", "Grace", "Hiro", "Isla", "Jamal", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor",
    "Wen", "Ximena", "Yusuf", "Zoe",
)
LAST_NAMES = (
    "Anderson", "Brown", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones",
    "Kowalski", "Lopez", "Martin", "Nguyen", "O'Brien", "Patel", "Quist", "Rossi", "Smith",
    "Tanaka", "Ueda", "Valdez", "Walker", "Xu", "Young", "Zimmer",
)

TAG_NAMES = ("Remote", "Finance", "Engineering", "Loaner", "VIP", "Kiosk", "Pilot")

# Human "time since boot" texts. 20 entries so that stepping the index by 7 per check-in
# (7 and 20 are coprime) always yields a different text than the previous check-in.
TIME_SINCE_BOOT = (
    "5 minutes ago", "12 minutes ago", "38 minutes ago", "1 hour ago", "2 hours ago",
    "5 hours ago", "9 hours ago", "17 hours ago", "1 day ago", "2 days ago", "3 days ago",
    "4 days ago", "6 days ago", "1 week ago", "2 weeks ago", "3 weeks ago", "1 month ago",
    "2 months ago", "3 months ago", "5 months ago",
)


class App(NamedTuple):
    name: str
    bundle_id: str | None  # None: the key is missing from the served app entirely
    path: str  # Mac path ("" on iOS/tvOS)
    versions: tuple[str, ...]  # first = current; later ones = devices that lag behind
    source: str
    signature: str


_APPLE_SIG = "Software Signing"
_MAS_SIG = "Apple Mac OS Application Signing"


def _builtin(name: str, bundle: str, version: str, folder: str = "/System/Applications") -> App:
    return App(name, bundle, f"{folder}/{name}.app", (version,), "Apple", _APPLE_SIG)


def _devid(name: str, bundle: str | None, versions: tuple[str, ...], team: str,
           path: str | None = None) -> App:
    return App(name, bundle, path or f"/Applications/{name}.app", versions,
               "Identified Developer", f"Developer ID Application: {team}")


def _mas(name: str, bundle: str, versions: tuple[str, ...]) -> App:
    return App(name, bundle, f"/Applications/{name}.app", versions, "App Store", _MAS_SIG)


CHROME = _devid("Google Chrome", "com.google.Chrome",
                ("126.0.6478.127", "125.0.6422.142", "119.0.6045.105"), "Google LLC (EQHXZ8M8AV)")

MAC_APPS: tuple[App, ...] = (
    _builtin("Safari", "com.apple.Safari", "17.5", folder="/Applications"),
    _builtin("Mail", "com.apple.mail", "16.0"),
    _builtin("Calendar", "com.apple.iCal", "11.0"),
    _builtin("Notes", "com.apple.Notes", "4.11"),
    _builtin("Messages", "com.apple.MobileSMS", "14.0"),
    _builtin("FaceTime", "com.apple.FaceTime", "36"),
    _builtin("Photos", "com.apple.Photos", "9.0"),
    _builtin("Music", "com.apple.Music", "1.4.5"),
    _builtin("Maps", "com.apple.Maps", "3.0"),
    _builtin("Reminders", "com.apple.reminders", "7.0"),
    _builtin("Preview", "com.apple.Preview", "11.0"),
    _builtin("TextEdit", "com.apple.TextEdit", "1.19"),
    _builtin("Calculator", "com.apple.calculator", "11.0"),
    _builtin("System Settings", "com.apple.systempreferences", "15.0"),
    _builtin("App Store", "com.apple.AppStore", "3.0"),
    _builtin("Terminal", "com.apple.Terminal", "2.14", folder="/System/Applications/Utilities"),
    _builtin("Activity Monitor", "com.apple.ActivityMonitor", "10.14",
             folder="/System/Applications/Utilities"),
    CHROME,
    _devid("Firefox", "org.mozilla.firefox", ("127.0.2", "126.0.1"), "Mozilla Corporation (43AQ936H96)"),
    _devid("Microsoft Edge", "com.microsoft.edgemac", ("126.0.2592.68",), "Microsoft Corporation (UBF8T346G9)"),
    _devid("zoom.us", "us.zoom.xos", ("6.1.1 (36333)", "5.17.11 (31580)"),
           "Zoom Video Communications, Inc. (BJ4HAAB9B3)"),
    _devid("Microsoft Word", "com.microsoft.Word", ("16.86", "16.85"), "Microsoft Corporation (UBF8T346G9)"),
    _devid("Microsoft Excel", "com.microsoft.Excel", ("16.86", "16.85"), "Microsoft Corporation (UBF8T346G9)"),
    _devid("Microsoft PowerPoint", "com.microsoft.Powerpoint", ("16.86",), "Microsoft Corporation (UBF8T346G9)"),
    _devid("Microsoft Outlook", "com.microsoft.Outlook", ("16.86", "16.84"), "Microsoft Corporation (UBF8T346G9)"),
    _devid("Microsoft Teams", "com.microsoft.teams2", ("24152.405.2925.6762",), "Microsoft Corporation (UBF8T346G9)"),
    _devid("Visual Studio Code", "com.microsoft.VSCode", ("1.90.2", "1.89.1"), "Microsoft Corporation (UBF8T346G9)"),
    _devid("1Password", "com.1password.1password", ("8.10.36", "8.10.30"), "AgileBits Inc. (2BUA8C4S2C)"),
    _devid("Docker", "com.docker.docker", ("4.31.1", "4.29.0"), "Docker Inc (9BNSXJN65R)"),
    _devid("iTerm", "com.googlecode.iterm2", ("3.5.2",), "GEORGE NACHMAN (H7V7XYVQ7D)"),
    _devid("Spotify", "com.spotify.client", ("1.2.40.599",), "Spotify (2FNC3A47ZF)"),
    _devid("Notion", "notion.id", ("3.10.0",), "Notion Labs, Inc (LBQJ96FQ8D)"),
    _devid("Figma", "com.figma.Desktop", ("124.2.9",), "Figma, Inc. (T8RA8NE3B7)"),
    _devid("Postman", "com.postmanlabs.mac", ("11.2.1",), "Postdot Technologies, Inc (H7H8Q7M5CK)"),
    _devid("Kandji Self Service", "io.kandji.KandjiSelfService", ("1.0.26",), "Kandji, Inc. (P3FGV63VK7)"),
    _devid("Adobe Acrobat Reader", "com.adobe.Reader", ("24.002.20857",), "Adobe Inc. (JQ525L2MZD)"),
    _devid("Dropbox", "com.getdropbox.dropbox", ("201.4.5203",), "Dropbox, Inc. (G7HH3F8CAK)"),
    _devid("VLC", "org.videolan.vlc", ("3.0.21", "3.0.20"), "VideoLAN (75GAHG3SZQ)"),
    _devid("Webex", "Cisco-Systems.Spark", ("44.6.0.29928",), "Cisco (DE8Y96K9QP)"),
    _devid("CrowdStrike Falcon", "com.crowdstrike.falcon.App", ("7.15.18513.0",), "CrowdStrike Inc. (X9E956P446)"),
    _devid("GlobalProtect", "com.paloaltonetworks.GlobalProtect.client", ("6.2.3-259",),
           "Palo Alto Networks (PXPZ95SK77)"),
    _mas("Slack", "com.tinyspeck.slackmacgap", ("4.39.90", "4.38.125")),
    _mas("Keynote", "com.apple.iWork.Keynote", ("14.1", "13.2")),
    _mas("Pages", "com.apple.iWork.Pages", ("14.1",)),
    _mas("Numbers", "com.apple.iWork.Numbers", ("14.1",)),
    _mas("Xcode", "com.apple.dt.Xcode", ("15.4", "15.3")),
    _mas("The Unarchiver", "com.macpaw.site.theunarchiver", ("4.3.8",)),
    _mas("WhatsApp", "net.whatsapp.WhatsApp", ("24.12.78",)),
    # Quirks: a helper with no bundle_id key at all, and a legacy tool with an empty one.
    # Both report the version as the text "No value", as real inventories do.
    App("install_helper", None, "/Library/Application Support/Acme/install_helper.app", ("No value",),
        "Unknown", ""),
    App("Legacy Reporting Tool", "", "/Applications/Legacy Reporting Tool.app", ("No value",),
        "Unknown", ""),
)

# iPhone/iPad lists leave Apple's built-ins out: only App Store / VPP apps appear.
IOS_APPS: tuple[App, ...] = tuple(
    App(name, bundle, "", versions, "", "")
    for name, bundle, versions in (
        ("Slack", "com.tinyspeck.chatlyio", ("24.06.10",)),
        ("Microsoft Outlook", "com.microsoft.Office.Outlook", ("4.2424.0", "4.2419.0")),
        ("Microsoft Teams", "com.microsoft.skype.teams", ("6.12.1",)),
        ("Microsoft Word", "com.microsoft.Office.Word", ("2.86",)),
        ("Microsoft Excel", "com.microsoft.Office.Excel", ("2.86",)),
        ("Microsoft Authenticator", "com.microsoft.azureauthenticator", ("6.8.12",)),
        ("Zoom", "us.zoom.videomeetings", ("6.1.1", "5.17.10")),
        ("Google Chrome", "com.google.chrome.ios", ("126.0.6478.54",)),
        ("Google Maps", "com.google.Maps", ("6.119.0",)),
        ("1Password", "com.1password.1password", ("8.10.36",)),
        ("Duo Mobile", "com.duosecurity.DuoMobile", ("4.60.0",)),
        ("Box", "net.box.BoxNet", ("5.36.0",)),
        ("Dropbox", "com.getdropbox.Dropbox", ("343.2",)),
        ("Salesforce", "com.salesforce.chatter", ("250.010",)),
        ("Workday", "com.workday.workdayapp", ("2024.24.0",)),
        ("Keynote", "com.apple.Keynote", ("14.1",)),
        ("Pages", "com.apple.Pages", ("14.1",)),
        ("Numbers", "com.apple.Numbers", ("14.1",)),
        ("Webex", "com.cisco.squared", ("44.6.0",)),
        ("SAP Concur", "com.concur.breeze", ("9.118.0",)),
        ("Notion", "notion.id", ("3.10.0",)),
        ("GlobalProtect", "com.paloaltonetworks.globalprotect.vpn", ("6.2.2",)),
        ("Adobe Acrobat Reader", "com.adobe.Adobe-Reader", ("24.06.00",)),
    )
)

WINDOWS_APPS: tuple[App, ...] = tuple(
    App(name, bundle, path, versions, "", "")
    for name, bundle, path, versions in (
        ("Google Chrome", "", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", ("126.0.6478.127",)),
        ("Microsoft Edge", "", "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
         ("126.0.2592.68",)),
        ("Microsoft Teams", "", "C:\\Program Files\\WindowsApps\\MSTeams\\ms-teams.exe", ("24152.405.2925.6762",)),
        ("Zoom Workplace", "", "C:\\Program Files\\Zoom\\bin\\Zoom.exe", ("6.1.1",)),
    )
)

ANDROID_APPS: tuple[App, ...] = tuple(
    App(name, bundle, "", versions, "", "")
    for name, bundle, versions in (
        ("Slack", "com.Slack", ("24.06.10.0",)),
        ("Microsoft Outlook", "com.microsoft.office.outlook", ("4.2424.1",)),
        ("Google Chrome", "com.android.chrome", ("126.0.6478.71",)),
    )
)

TV_APPS: tuple[App, ...] = tuple(
    App(name, bundle, "", versions, "", "")
    for name, bundle, versions in (
        ("YouTube", "com.google.ios.youtube", ("19.25.4",)),
        ("Zoom Rooms", "us.zoom.zoomrooms", ("6.1.0",)),
        ("Webex", "com.cisco.webex.tv", ("44.5.0",)),
    )
)

PROFILES = (
    ("Kandji MDM Profile", "com.kandji.profile.mdmprofile", ("com.apple.mdm",)),
    ("Wi-Fi - Corp", "io.kandji.wifi.corp", ("com.apple.wifi.managed",)),
    ("Passcode Policy", "io.kandji.passcode", ("com.apple.mobiledevice.passwordpolicy",)),
    ("Restrictions", "io.kandji.restrictions", ("com.apple.applicationaccess",)),
    ("Root CA", "io.kandji.cert.rootca", ("com.apple.security.root",)),
    ("FileVault", "io.kandji.filevault", ("com.apple.MCX.FileVault2", "com.apple.security.FDERecoveryKeyEscrow")),
)


# The Kandji agent's version as the API spells it: marketing version and build.
AGENT_VERSIONS = ("3.7.2 (2834)", "4.5.9 (5160)", "4.3.2 (4711)")

# macOS's own accounts, listed by details' users.system_users (about 99 on a real Mac).
# (username, uid, full name, home); admin is "No" except for root.
_DAEMONS = (
    "_amavisd", "_appleevents", "_appowner", "_appserver", "_ard", "_assetcache", "_astris", "_atsserver",
    "_avbdeviced", "_calendar", "_captiveagent", "_ces", "_clamav", "_cmiodalassistants", "_coreaudiod",
    "_coremediaiod", "_coreml", "_ctkd", "_cvmsroot", "_cvs", "_cyrus", "_datadetectors", "_demod",
    "_devdocs", "_devicemgr", "_diskimagesiod", "_displaypolicyd", "_distnote", "_dovecot", "_dovenull",
    "_dpaudio", "_driverkit", "_eppc", "_findmydevice", "_fpsd", "_ftp", "_fud", "_gamecontrollerd",
    "_geod", "_hidd", "_iconservices", "_installassistant", "_installcoordinationd", "_installer", "_jabber",
    "_kadmin_admin", "_kadmin_changepw", "_knowledgegraphd", "_krb_anonymous", "_krb_changepw",
    "_krb_kadmin", "_krb_kerberos", "_krb_krbtgt", "_krbfast", "_krbtgt", "_launchservicesd", "_lda", "_locationd",
    "_logd", "_lp", "_mailman", "_mbsetupuser", "_mcxalr", "_mdnsresponder", "_mobileasset", "_mysql",
    "_nearbyd", "_netbios", "_netstatistics", "_networkd", "_notification_proxy", "_nsurlsessiond",
    "_oahd", "_ondemand", "_postfix", "_postgres", "_qtss", "_reportmemoryexception", "_rmd",
    "_sandbox", "_screensaver", "_scsd", "_securityagent", "_softwareupdate", "_spotlight", "_sshd",
    "_svn", "_taskgated", "_teamsserver", "_timed", "_timezone", "_tokend", "_trustd", "_trustevaluationagent",
    "_unknown", "_update_sharing", "_usbmuxd", "_uucp", "_warmd", "_webauthserver", "_windowserver", "_www",
    "_wwwproxy", "_xserverdocs",
)
SYSTEM_USERS: tuple[tuple[str, str, str, str], ...] = (
    ("root", "0", "System Administrator", "/var/root"),
    ("daemon", "1", "System Services", "/var/root"),
    ("nobody", "-2", "Unprivileged User", "/var/empty"),
    *((name, str(26 if name == "_lp" else 200 + i), name.lstrip("_").replace("_", " ").title(),
       "/var/spool/cups" if name == "_lp" else "/var/empty")
      for i, name in enumerate(_DAEMONS[:96])),
)
