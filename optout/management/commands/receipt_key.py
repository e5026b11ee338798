"""`python manage.py receipt_key`: the receipt signing key, for operators.

Without options it prints the public key (PEM) that verifies this registry's
receipts, for operators to publish. ``--generate`` prints a NEW private key
(PEM, PKCS#8) on stdout to be put into OPTOUT_RECEIPT_SIGNING_KEY (or a file
named by OPTOUT_RECEIPT_SIGNING_KEY_FILE); it writes no file and changes nothing.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from optout import receipts


class Command(BaseCommand):
    help = (
        "Print the public key that verifies receipts (PEM), or with --generate a new "
        "private signing key for OPTOUT_RECEIPT_SIGNING_KEY."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--generate",
            action="store_true",
            help="print a new Ed25519 private key (PEM) on stdout; nothing is written",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate"]:
            key = receipts.private_key_generate()
            self.stdout.write(receipts.private_key_pem(key), ending="")
            self.stderr.write(
                f"New key id {receipts.key_id(key.public_key())}. Keep this private key "
                "secret; set it as OPTOUT_RECEIPT_SIGNING_KEY and publish the output of "
                "`manage.py receipt_key`."
            )
            return
        try:
            key = receipts.signing_key()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        self.stdout.write(receipts.public_key_to_pem(key.public_key()), ending="")
        self.stderr.write(f"key id {receipts.key_id(key.public_key())}")
