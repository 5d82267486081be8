"""Generated CRI runtime.v1 code lands here (`make proto`); nothing in this folder but this file is committed."""
