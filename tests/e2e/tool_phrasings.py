"""What callers say, each way, for the three call-control choices: the table a function-calling
model is measured on (tests/e2e/test_tool_phrasings.py, run by scripts/gpu-check.sh). The
transfer phrasings are the rule tests' own (tests/unit/test_agent.py)."""

from __future__ import annotations

from tests.unit.test_agent import ASKS_FOR_A_PERSON, QUESTIONS_FOR_THE_AGENT

HANG_UP = [
    "Thanks, goodbye!", "Bye.", "That's all, thank you.", "Okay, bye bye.",
    "No, that's everything. Thanks!", "Alright, thanks for your help, bye.",
    "Great, that's all I needed.", "Nothing else, thanks. Goodbye.", "I'm done, thank you.",
    "Thank you so much, have a good day. Bye.", "Okay cool, talk to you later.",
    "No thanks, that's it.", "Perfect, that answers it. Goodbye.", "That's all for today.",
    "You can hang up now.", "I have to go, bye.", "Cheers, bye.", "See you, thanks.",
    "Okay that's everything, have a nice day.", "No more questions, thank you, goodbye.",
    "Thanks, I've got what I need. Bye now.", "All good, bye.", "Goodbye then.",
    "That's it from me, thanks.", "Bye for now.", "Thank you, that's all I wanted to know.",
    "Nope, nothing else. Bye.", "Great, thanks, I'll see you Tuesday. Bye!",
    "Okay, I'll call back later. Bye.", "Wonderful, thank you, goodbye.",
]

NOT_HANG_UP = [
    "What time do you close today?", "How much is a cleaning?", "Do you take walk-ins?",
    "Thanks. And do you open on Saturdays?", "Okay, and where do I park?",
    "Is that all I need to bring?", "What's the cancellation fee?", "Are you open on Sunday?",
    "Thanks! One more question: do you take insurance?", "How do I get there by bus?",
    "Can I pay by card?", "That's great. How long does it take?", "Do you do emergencies?",
    "Is there a charge for the first visit?", "Who is the dentist on Fridays?",
    "Okay. What's your address?", "What was the price again?", "Do you have late hours?",
    "Is the office accessible by wheelchair?", "Thanks, and is parking free?",
    "Could you repeat that?", "Sorry, I didn't catch that.", "Hello? Are you still there?",
    "Wait, how much was that?", "Hmm, let me think.", "Do you do teeth whitening?",
    "Okay, so what happens if I'm late?", "Is that everything included in the price?",
    "Will it hurt?", "Do you see children?",
]

TAKE_MESSAGE = [
    "Can I leave a message?", "I'd like to leave a message for Dr. Chen.",
    "Could you take a message?", "Please take a message.", "Can you pass on a message?",
    "I want to leave a message for the office manager.", "Can I leave my number?",
    "Could you ask someone to call me back?", "Please have someone call me back.",
    "I'd like a call back, please.", "Can you give them a message from me?",
    "Just take a message, please.", "Could I leave a note for the dentist?",
    "Can you tell them to ring me back?", "I need someone to call me back about my bill.",
    "Yes, please take a message.", "Can I leave a voicemail?",
    "Would you pass a message on to Dr. Patel?", "Let me leave a message.",
    "I'll leave a message then.", "Can you let them know I called and take my details?",
    "Can somebody get back to me? I'll give you my number.", "Take down my number please.",
    "Please note down my name and number for a call back.",
    "Can you have the plumber call me back?", "Leave a message for the manager, please.",
    "I'd like to leave my details for a call back.", "Could you jot down a message?",
    "Can I get a callback?", "Message for the front desk, please.",
]

NOT_TAKE_MESSAGE = [
    "Do you read the messages I send online?", "What's your phone number?",
    "How much is a check-up?", "When are you open?", "Did you get my message yesterday?",
    "Is there a message board at the office?", "Can you text me the address?",
    "What's the email address?", "How do I book online?", "Do you send reminder messages?",
    "Where are you located?", "What's the fee for a missed appointment?",
    "Do you take walk-ins?", "I got a message saying my appointment moved. Is that right?",
    "Who called me from this number?", "What does the message on your website mean?",
    "Do you do root canals?", "Is there parking?", "Can I pay in installments?",
    "Do you accept Delta Dental?", "How long is a cleaning?", "Are you open on holidays?",
    "How do I cancel?", "Is Dr. Chen in on Monday?", "Do you have a fax number?",
    "What's your cancellation policy?", "How much are X-rays?", "Can kids come in?",
    "Do you have weekend hours?", "What's included in a check-up?",
]

TRANSFER = ASKS_FOR_A_PERSON
NOT_TRANSFER = QUESTIONS_FOR_THE_AGENT
