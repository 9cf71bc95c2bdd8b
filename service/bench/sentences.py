"""A fixed set of everyday English of realistic, mixed lengths (short replies to long paragraphs)."""

from __future__ import annotations

SENTENCES: list[str] = [
    "Yes.",
    "Thank you very much.",
    "Your order has been shipped.",
    "Please hold while I connect you to an agent.",
    "The meeting has been moved to three o'clock on Thursday afternoon.",
    "Turn left at the next intersection, then continue straight for about two miles.",
    "I'm sorry, I didn't catch that. Could you repeat your account number, please?",
    "The forecast calls for light rain in the morning, clearing by noon, with a high of seventy-two degrees.",
    "Welcome back! You have four new messages and one missed call.",
    "Okay.",
    "Chorus batches many callers into one forward pass, so the graphics card is never idle.",
    "Before you begin, make sure the device is charged and connected to a stable network.",
    "In 1969, astronauts landed on the Moon and walked on its surface for the first time.",
    "Your balance is $42.17.",
    "Hello, and thank you for calling. All of our representatives are currently busy, but your call is "
    "important to us, so please stay on the line and someone will be with you shortly.",
    "What time is it?",
    "The quick brown fox jumps over the lazy dog.",
    "A good voice interface answers quickly, speaks clearly, and never makes the listener wait for silence.",
    "Dr. Smith will see you now.",
    "Remember to bring your passport, your boarding pass, and a pen to fill in the customs form.",
    "No problem at all.",
    "After the update, restart the application and sign in again with your new password.",
    "The museum opens at nine, closes at five, and is free on the first Sunday of every month.",
    "Goodbye!",
]
