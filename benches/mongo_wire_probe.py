"""How the MongoDB-wire test server answers the scheduler's query shapes.

Run: pip install pymongo && ./scripts/with-mongo.sh python3 benches/mongo_wire_probe.py
Prints the milliseconds of three runs of each query over N (default 10,000) stored documents
and 1,000 due ones, in a scratch database `probe`. It shows which filters the server answers
from its _id index and which ones it answers by reading every document.
"""

import datetime
import os
import time

from bson import ObjectId
from pymongo import MongoClient

client = MongoClient(os.environ["MONGODB_URI"])
db = client["probe"]
jobs = db["jobs"]
jobs.drop()
now = datetime.datetime.now(datetime.timezone.utc)
stored = int(os.environ.get("N", "10000"))


def job(due):
    return {"_id": ObjectId(), "dueAt": due, "leaseUntil": None, "name": "x" * 200,
            "jobData": {"a": "b" * 300}}


due = [job(now) for _ in range(1000)]
jobs.insert_many([job(now + datetime.timedelta(days=365)) for _ in range(stored)])
jobs.insert_many(due)
ids = [d["_id"] for d in due[:200]]


def timed(label, call, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(round((time.perf_counter() - start) * 1000, 1))
    print(f"{stored + 1000} documents  {label:<40} {times} ms")


timed("find_one by _id", lambda: jobs.find_one({"_id": ids[0]}))
timed("find_one by _id and one more field", lambda: jobs.find_one({"_id": ids[0], "leaseUntil": None}))
timed("find by _id $in 200", lambda: list(jobs.find({"_id": {"$in": ids}})))
timed("window read (dueAt range, sorted)",
      lambda: list(jobs.find({"dueAt": {"$lte": now}}, {"dueAt": 1}).sort("dueAt", 1).limit(10000)))
timed("update command, 200 by _id", lambda: db.command({
    "update": "jobs", "ordered": False,
    "updates": [{"q": {"_id": i}, "u": {"$set": {"x": 1}}} for i in ids]}))
timed("update command, 200 by _id and a field", lambda: db.command({
    "update": "jobs", "ordered": False,
    "updates": [{"q": {"_id": i, "leaseOwner": None}, "u": {"$set": {"x": 1}}} for i in ids]}))
timed("insert_one", lambda: jobs.insert_one(job(now)))
client.drop_database("probe")
