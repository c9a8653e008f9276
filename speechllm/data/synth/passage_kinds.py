"""Kinds of spoken passage: phone messages, announcements, short news, instructions, stories, reminders.

Each kind is one function registered with `@register_kind`, taking a `ValueDraw` (the passage's values and
phrasing choices) and returning a `Part`: an opening line, body sentences that state facts in one of several
phrasings (each body item is shuffled later as a whole, so sentences that refer back to one another stay
together; distractor facts of the same types sit among them), a closing line, the questions the facts answer, a
summary of the key facts and a shorter headline (what a long passage's summary says of this part). Adding a kind
touches this file only.

A question is `anchored` when it names its entity ("What time does the ferry to Lisbon leave?"), so it keeps
one answer when several parts are chained into a long passage; "Who called?" is asked of short passages only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from speechllm.data.synth.passage_values import ValueDraw


@dataclass(frozen=True)
class Question:
    question: str
    answer: str  # a span of the passage's text
    anchored: bool = True


@dataclass
class Part:
    kind: str
    opener: str
    body: list[str]
    closer: str
    questions: list[Question]
    summary: str
    headline: str


KINDS: dict[str, Callable[[ValueDraw], Part]] = {}


def register_kind(name: str):
    """Register `make(values) -> Part` as passage kind `name`."""

    def add(make):
        KINDS[name] = make
        return make

    return add


def together(v: ValueDraw, first: str, *rest: str) -> str:
    """One body item: `first`, then `rest` in a random order (sentences that belong to the same entity)."""
    order = v.rng.permutation(len(rest)).tolist()
    return " ".join([first, *(rest[i] for i in order)])


def person(v: ValueDraw) -> tuple[str, str, str]:
    """(first name, subject pronoun, possessive) of a new person."""
    if v.choice(["female", "male"]) == "female":
        return v("female"), "she", "her"
    return v("male"), "he", "his"


@register_kind("phone message")
def phone_message(v: ValueDraw) -> Part:
    caller, _, _ = person(v)
    org = v("venue")
    opener = v.choice([f"Hi, this is {caller} from {org}.", f"Hello, {caller} here, calling from {org}.",
                       f"Good morning, it's {caller} at {org}.", f"Hi there, my name is {caller}, and I'm calling "
                       f"from {org}.", f"Hey, it's {caller}. I'm ringing from {org}."])
    questions = [Question(v.choice(["Who called?", "What is the caller's name?"]), caller, anchored=False),
                 Question(f"Who called from {org}?", caller),
                 Question(v.choice([f"Where is {caller} calling from?", f"Which place did {caller} call from?"]), org)]
    purpose = v.choice(["appointment", "delivery", "table"])
    if purpose == "appointment":
        day, time, room = v("day"), v("time"), v("room")
        body = [v.choice([f"Your appointment has been moved to {day} at {time}.",
                          f"We can now see you on {day}, at {time}.",
                          f"The new time for your visit is {time} on {day}."]),
                v.choice([f"Please go straight to room {room} when you arrive.",
                          f"This time it will be in room {room}.", f"You will be seen in room {room}, upstairs."])]
        questions += [Question(f"On what day is the appointment at {org}?", day),
                      Question(f"What time is the appointment at {org}?", time),
                      Question(f"Which room is the appointment at {org} in?", room)]
        summary = f"{caller} from {org} moved your appointment to {day} at {time}, in room {room}."
    elif purpose == "delivery":
        item, street, day, price = v("item"), v("street"), v("day"), v("price")
        body = [" ".join([v.choice([f"Your order, {item}, is ready.", f"We have {item} waiting for you.",
                                    f"The {item[2:]} you ordered has arrived."]),
                          v.choice([f"We will bring it to {street} on {day}.",
                                    f"Our driver can drop it at {street} on {day}.",
                                    f"It goes out on {day}, to your address on {street}."])]),
                v.choice([f"There is still {price} to pay.", f"The balance is {price}, payable on delivery.",
                          f"Please have {price} ready for the driver."])]
        questions += [Question(f"What did you order from {org}?", item[2:]),
                      Question(f"To which street will {org} deliver the order?", street),
                      Question(f"On what day will the order from {org} be delivered?", day),
                      Question(f"How much is left to pay for the order from {org}?", price)]
        summary = (f"{caller} from {org} says your {item[2:]} will be delivered to {street} on {day}, "
                   f"with {price} to pay.")
    else:
        count, day, time = v("count"), v("day"), v("time")
        body = [v.choice([f"I'm confirming your table for {count} people.", f"We have booked a table for {count}.",
                          f"Your booking is for {count} guests."]),
                v.choice([f"We will expect you on {day} at {time}.", f"That is for {day}, at {time}.",
                          f"The table is yours from {time} on {day}."])]
        questions += [Question(f"How many people is the booking at {org} for?", count),
                      Question(f"On what day is the booking at {org}?", day),
                      Question(f"What time is the booking at {org}?", time)]
        summary = f"{caller} from {org} confirmed a table for {count} on {day} at {time}."
    other, _, _ = person(v)
    day2 = v("day")
    distractor = v.choice([
        (f"By the way, {other} from our office is away until {day2}.",
         Question(f"Until what day is {other} away?", day2)),
        (f"We are closed on {day2}, so please don't come then.", Question(f"On what day is {org} closed?", day2)),
        (f"If you need to change anything, ask for {other}.", Question(f"Who should you ask for to change anything "
                                                                        f"at {org}?", other))])
    body.append(distractor[0])
    questions.append(distractor[1])
    closer = v.choice(["Thanks, bye.", "Call us back if you have any questions.", "Have a good day.",
                       "Talk to you soon.", "Thank you, goodbye."])
    return Part("phone message", opener, body, closer, questions, summary, f"{caller} from {org} called")


_SERVICES = [("train", "platform"), ("bus", "stand"), ("ferry", "pier"), ("coach", "bay"), ("flight", "gate")]


@register_kind("announcement")
def announcement(v: ValueDraw) -> Part:
    service, stop = v.choice(_SERVICES)
    city, number, time, minutes = v("city"), v("platform"), v("time"), v("minutes")
    opener = v.choice(["Attention please.", "Good evening, passengers.", "May I have your attention, please.",
                       "Ladies and gentlemen, an announcement.", "This is a customer announcement."])
    body = [together(v, v.choice([f"The {service} to {city} will leave from {stop} {number}.",
                                  f"Passengers for {city}, your {service} departs from {stop} {number}.",
                                  f"The {service} for {city} is now boarding at {stop} {number}."]),
                     v.choice([f"Its departure time is now {time}.", f"It is due to leave at {time}.",
                               f"Its new departure time is {time}."]),
                     v.choice([f"It is running {minutes} minutes late.", f"It has a delay of {minutes} minutes.",
                               f"We expect it to be {minutes} minutes behind schedule."]))]
    questions = [Question(f"From which {stop} does the {service} to {city} leave?", number),
                 Question(f"What time does the {service} to {city} leave?", time),
                 Question(f"How many minutes late is the {service} to {city}?", minutes),
                 Question("Where is the delayed service going?", city, anchored=False)]
    city2, number2 = v("city"), v("platform")
    body.append(v.choice([f"The {service} to {city2} will leave on time from {stop} {number2}.",
                          f"Passengers for {city2} should go to {stop} {number2}."]))
    questions += [Question(f"From which {stop} does the {service} to {city2} leave?", number2),
                  Question(f"Which city is served from {stop} {number2}?", city2)]
    closer = v.choice(["We apologise for the delay.", "Thank you for travelling with us.",
                       "Please keep your belongings with you.", "Thank you for your patience."])
    summary = f"The {service} to {city} leaves from {stop} {number} at {time}, {minutes} minutes late."
    return Part("announcement", opener, body, closer, questions, summary,
                f"the {service} to {city} is {minutes} minutes late")


@register_kind("news")
def news(v: ValueDraw) -> Part:
    city, event, date, crowd, price = v("city"), v("event"), v("date"), v("crowd"), v("price")
    mayor, surname = v(v.choice(["female", "male"])), v("surname")
    opener = v.choice(["Here is the local news.", "And now, the news.", "In the headlines today.",
                       "Good morning, here are the news headlines."])
    body = [together(v, v.choice([f"The city of {city} will host {event} on {date}.",
                                  f"{city} is getting ready for {event} on {date}.",
                                  f"On {date}, {event} comes to {city}."]),
                     v.choice([f"The mayor, {mayor} {surname}, expects about {crowd} visitors.",
                               f"Organisers told mayor {mayor} {surname} that {crowd} people may come."]),
                     v.choice([f"Tickets cost {price}.", f"Entry is {price} for adults.",
                               f"A ticket will set you back {price}."]))]
    questions = [Question(f"Which city will host {event}?", city), Question(f"When is {event} in {city}?", date),
                 Question(f"Who is the mayor of {city}?", f"{mayor} {surname}"),
                 Question(f"How many visitors are expected at {event} in {city}?", crowd),
                 Question(f"How much are tickets for {event} in {city}?", price)]
    city2, building, street = v("city"), v("building"), v("street")
    body.append(v.choice([f"In other news, {city2} has opened a new {building} on {street}.",
                          f"Meanwhile, a new {building} opened on {street}, in {city2}."]))
    questions.append(Question(f"On which street is the new {building} in {city2}?", street))
    closer = v.choice(["That's all for now.", "More news in an hour.", "Stay tuned for the weather.", "Back to you."])
    summary = f"{city} will host {event} on {date}, with {crowd} visitors expected and tickets at {price}."
    return Part("news", opener, body, closer, questions, summary, f"{city} hosts {event} on {date}")


@register_kind("instructions")
def instructions(v: ValueDraw) -> Part:
    org, line, street, room, document, time = v("venue"), v("line"), v("street"), v("room"), v("document"), v("time")
    contact, _, _ = person(v)
    opener = v.choice([f"Here is how to find {org}.", f"Welcome, and thank you for visiting {org}.",
                       f"Some directions for your visit to {org}."])
    body = [v.choice([f"Take bus number {line} and get off on {street}.", f"The number {line} bus stops right on "
                      f"{street}.", f"From the station, bus {line} takes you to {street}."]),
            v.choice([f"Inside, go to room {room}.", f"We are in room {room}, at the end of the hall.",
                      f"Look for room {room} on the second floor."]),
            v.choice([f"Please bring your {document}.", f"Don't forget your {document}.",
                      f"You will need to show your {document}."]),
            v.choice([f"Try to arrive by {time}.", f"The desk opens at {time}.", f"Be there before {time}, please."]),
            v.choice([f"At the front desk, ask for {contact}.", f"{contact} will meet you at reception."])]
    questions = [Question(f"Which bus goes to {org}?", line), Question(f"On which street is {org}?", street),
                 Question(f"Which room should you go to at {org}?", room),
                 Question(f"What should you bring to {org}?", document),
                 Question(f"Who should you ask for at {org}?", contact)]
    street2, month = v("street"), v("month")
    body.append(v.choice([f"Do not go to our old office on {street2}; it closed in {month}.",
                          f"Our old address on {street2} is no longer in use."]))
    questions.append(Question(f"On which street was the old office of {org}?", street2))
    closer = v.choice(["See you soon.", "We look forward to meeting you.", "Safe travels."])
    summary = f"Take bus {line} to {org} on {street}, go to room {room}, bring your {document} and ask for {contact}."
    return Part("instructions", opener, body, closer, questions, summary, f"{org} is in room {room} on {street}")


@register_kind("story")
def story(v: ValueDraw) -> Part:
    name, she, her = person(v)
    home, away, day, item, price, relative = v("city"), v("city"), v("day"), v("item"), v("price"), v("relative")
    relative_name, _, _ = person(v)
    opener = v.choice([f"{name} lived in {home}.", f"This is a story about {name}, who grew up in {home}.",
                       f"For years, {name} had lived quietly in {home}."])
    # The trip is told in order; only the neighbour's news moves.
    body = [" ".join([v.choice([f"One {day}, {she} took the train to {away}.",
                                f"On a {day}, {she} travelled to {away}.",
                                f"Then, one {day}, {name} set off for {away}."]),
                      v.choice([f"There {she} visited {her} {relative}, {relative_name}.",
                                f"{she.capitalize()} wanted to see {her} {relative}, {relative_name}."]),
                      v.choice([f"At the market {she} bought {item} for {price}.",
                                f"{she.capitalize()} paid {price} for {item}.",
                                f"In a small shop, {item} caught {her} eye, and {she} paid {price} for it."])])]
    questions = [Question(f"Where did {name} live?", home), Question(f"Which city did {name} travel to?", away),
                 Question(f"On what day did {name} travel?", day),
                 Question(f"Who did {name} visit?", relative_name),
                 Question(f"How much did {name} pay for {item}?", price)]
    neighbour, _, _ = person(v)
    elsewhere = v("city")
    neighbour_news = v.choice([(f"{name}'s neighbour, {neighbour}, had moved to {elsewhere}.",
                                f"Where had {neighbour} moved to?"),
                               (f"Back then, {neighbour} from next door was working in {elsewhere}.",
                                f"Where was {neighbour} working?")])
    body.insert(int(v.rng.integers(2)), neighbour_news[0])
    questions.append(Question(neighbour_news[1], elsewhere))
    closer = v.choice([f"It was a good day for {name}.", "Then it was time to go home.",
                       f"{name} still talks about that trip."])
    summary = (f"{name} from {home} travelled to {away} on {day} to visit {relative_name} "
               f"and bought {item} for {price}.")
    return Part("story", opener, body, closer, questions, summary, f"{name} visited {relative_name} in {away}")


@register_kind("reminder")
def reminder(v: ValueDraw) -> Part:
    sender, _, _ = person(v)
    topic, day, time, room = v("topic"), v("day"), v("time"), v("room")
    opener = v.choice([f"A quick reminder from {sender}.", f"Hi everyone, {sender} here.",
                       f"This is {sender} with a reminder."])
    body = [together(v, v.choice([f"The meeting about {topic} is on {day}.", f"We will discuss {topic} on {day}.",
                                  f"On {day} we meet to talk about {topic}."]),
                     v.choice([f"It starts at {time}.", f"Please be there at {time}.", f"We begin at {time} sharp."]),
                     v.choice([f"We are in room {room}.", f"It will be held in room {room}.",
                               f"Come to room {room}."]))]
    questions = [Question(v.choice(["Who sent the reminder?", "Who is the reminder from?"]), sender, anchored=False),
                 Question(f"On what day is the meeting about {topic}?", day),
                 Question(f"What time does the meeting about {topic} start?", time),
                 Question(f"In which room is the meeting about {topic}?", room),
                 Question(v.choice(["What is the meeting about?", "What topic will the meeting cover?"]), topic,
                          anchored=False)]
    topic2, day2 = v("topic"), v("day")
    body.append(v.choice([f"The talk about {topic2} has moved to {day2}.",
                          f"Remember that the talk about {topic2} is now on {day2} instead."]))
    questions.append(Question(f"On what day is the talk about {topic2} now?", day2))
    closer = v.choice(["See you there.", "Thanks, everyone.", "Let me know if you cannot make it."])
    summary = f"{sender} reminds everyone that the meeting about {topic} is on {day} at {time} in room {room}."
    return Part("reminder", opener, body, closer, questions, summary, f"the meeting about {topic} is on {day}")
