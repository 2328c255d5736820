"""moto's server (``moto_server``) with a fix for one moto 5.x bug, run by the tests as
``python -m tests.aws.moto_main -H 127.0.0.1 -p PORT``.

The bug: ``CreateLaunchTemplateVersion`` keeps ``UserData`` as a plain string where
``CreateLaunchTemplate`` keeps it parsed, and an Auto Scaling group that launches instances from
such a version then fails inside moto (an assertion, answered as an HTML 500). Real EC2 has no
such difference, so the fix makes moto treat both the same; nothing else changes.
"""

from __future__ import annotations

import sys


def _patch_launch_template_versions() -> None:
    from moto.core.types import Base64EncodedString
    from moto.ec2.models.launch_templates import LaunchTemplateVersion
    from moto.ec2.utils import parse_user_data

    def user_data(self: LaunchTemplateVersion) -> Base64EncodedString | None:
        value = self.data.get("UserData")
        return value if value is None or isinstance(value, Base64EncodedString) \
            else parse_user_data(value)

    LaunchTemplateVersion.user_data = property(user_data)  # type: ignore[assignment]


if __name__ == "__main__":
    _patch_launch_template_versions()
    from moto.server import main

    main(sys.argv[1:])
