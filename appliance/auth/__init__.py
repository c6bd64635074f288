"""Console accounts: users with roles, API tokens, browser sessions, the audit log."""

from appliance.auth.accounts import (
    ROLES,
    AccountError,
    Accounts,
    ApiToken,
    Principal,
    User,
    open_accounts_db,
)

__all__ = ["ROLES", "AccountError", "Accounts", "ApiToken", "Principal", "User",
           "open_accounts_db"]
